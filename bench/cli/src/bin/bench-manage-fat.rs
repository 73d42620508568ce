//! `bench-manage` plus 50 extra registered commands (feature
//! `extra-commands`): start-up must not grow with the number of registered
//! commands, so `bench-manage-fat noop` should time as `bench-manage noop`.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
use bench_cli as _;
use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::{anyhow, clap};

/// Defines and registers one no-op command per `Type => "name"` pair, each
/// with an option and a flag, as a real command has.
macro_rules! extra_commands {
    ($($ty:ident => $name:literal),* $(,)?) => {$(
        #[doc = concat!("Extra command `", $name, "`: does nothing.")]
        #[derive(Debug, clap::Args)]
        pub struct $ty {
            /// A value.
            #[arg(long)]
            value: Option<String>,
            /// A flag.
            #[arg(long)]
            flag: bool,
        }

        impl ManageCommand for $ty {
            const NAME: &'static str = $name;
            fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
                let _ = (self.value, self.flag);
                Ok(())
            }
        }
        register!($ty);
    )*};
}

extra_commands! {
    Extra00 => "extra-00",
    Extra01 => "extra-01",
    Extra02 => "extra-02",
    Extra03 => "extra-03",
    Extra04 => "extra-04",
    Extra05 => "extra-05",
    Extra06 => "extra-06",
    Extra07 => "extra-07",
    Extra08 => "extra-08",
    Extra09 => "extra-09",
    Extra10 => "extra-10",
    Extra11 => "extra-11",
    Extra12 => "extra-12",
    Extra13 => "extra-13",
    Extra14 => "extra-14",
    Extra15 => "extra-15",
    Extra16 => "extra-16",
    Extra17 => "extra-17",
    Extra18 => "extra-18",
    Extra19 => "extra-19",
    Extra20 => "extra-20",
    Extra21 => "extra-21",
    Extra22 => "extra-22",
    Extra23 => "extra-23",
    Extra24 => "extra-24",
    Extra25 => "extra-25",
    Extra26 => "extra-26",
    Extra27 => "extra-27",
    Extra28 => "extra-28",
    Extra29 => "extra-29",
    Extra30 => "extra-30",
    Extra31 => "extra-31",
    Extra32 => "extra-32",
    Extra33 => "extra-33",
    Extra34 => "extra-34",
    Extra35 => "extra-35",
    Extra36 => "extra-36",
    Extra37 => "extra-37",
    Extra38 => "extra-38",
    Extra39 => "extra-39",
    Extra40 => "extra-40",
    Extra41 => "extra-41",
    Extra42 => "extra-42",
    Extra43 => "extra-43",
    Extra44 => "extra-44",
    Extra45 => "extra-45",
    Extra46 => "extra-46",
    Extra47 => "extra-47",
    Extra48 => "extra-48",
    Extra49 => "extra-49",
}

manage::main!();
