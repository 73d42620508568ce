# Appended by bench/compare.sh to the settings.py that `django-admin
# startproject djsite` wrote: what a production site sets (DEBUG off), the
# package as its README installs it, and its default file backend with the
# state file inside the throw-away project. BENCH_MIDDLEWARE=0 leaves the
# middleware out: the bare app the overhead is measured against.
import os as _os

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS += ["maintenance_mode"]
if _os.environ.get("BENCH_MIDDLEWARE", "1") != "0":
    MIDDLEWARE += ["maintenance_mode.middleware.MaintenanceModeMiddleware"]
MAINTENANCE_MODE_STATE_FILE_PATH = str(BASE_DIR / "maintenance_mode_state.txt")
