# hftweb: one image for web (Uvicorn), the Celery workers and beat. See docker-compose.yml.
FROM python:3.11-slim

# HFT_STATIC=collected: every process serves the static files collected below (content-hashed names, gzip
# copies, a year's immutable cache; hftweb/settings.py), as make run does. STATIC_ROOT lies outside RUN_DIR
# so that a volume mounted on RUN_DIR cannot hide them.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUN_DIR=/app/.run \
    STATIC_ROOT=/app/staticfiles \
    HFT_STATIC=collected

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 10001 --user-group hft
COPY --chown=hft:hft . .
# Collected at build, as root (the files stay read-only to the app). DEBUG=1 for this step only: the settings then
# need no SECRET_KEY / HFT_SECRETS_KEY, which the image must not contain; collectstatic reads neither.
RUN DEBUG=1 python manage.py collectstatic --noinput -v0 \
    && test -f /app/staticfiles/staticfiles.json
RUN mkdir -p /app/.run && chown hft:hft /app/.run
USER hft

EXPOSE 8000
# The web server make run and compose use (HFT_WEB=uvicorn:2; docs/scale.md): two workers, the sans-io websocket
# implementation whose send waits on a full socket (what bounds a stalled browser), no per-message deflate, and no
# X-Forwarded-For trust (HFT_TRUSTED_PROXIES decides that).
CMD ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--lifespan", "off", "--ws", "websockets-sansio", \
     "--ws-per-message-deflate", "false", "--no-proxy-headers", "--no-access-log", "--log-level", "warning", \
     "--timeout-graceful-shutdown", "3", \
     "hftweb.asgi:application"]
