//! The plug-in's own tests, through `manage::testing`: the same path as the
//! runner, against a temporary state directory.

use hello_plugin as _;

#[test]
fn greets_by_name() {
    let out = manage::testing::run(["hello", "Ada", "--times", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "Hello, Ada!\nHello, Ada!\n");
}

#[test]
fn greets_the_world_by_default() {
    let out = manage::testing::run(["hello"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello, world!\n"));
}

#[test]
fn is_refused_while_the_site_is_offline() {
    let site = manage::testing::TempSite::new();
    let change = maintenance_core::backend::ModeChange::by_this_process();
    site.backend().force_offline(&change).unwrap();
    let out = site.run(["hello"]);
    assert_eq!(out.code, 75);
    assert!(
        out.stderr.contains("--ignore-maintenance"),
        "{}",
        out.stderr
    );
    assert_eq!(site.run(["hello", "--ignore-maintenance"]).code, 0);
}

#[test]
fn a_bad_option_is_a_usage_error() {
    let out = manage::testing::run(["hello", "--times", "many"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("invalid value 'many'"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_site_configuration_of_the_tests_own() {
    let site = manage::testing::TempSite::with_config("[alias]\nhi = \"hello Ada\"\n");
    assert_eq!(site.run(["hi"]).stdout, "Hello, Ada!\n");
}
