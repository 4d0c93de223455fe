# hftweb: one image for web (Daphne), worker and beat (Celery). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUN_DIR=/app/.run

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 10001 --user-group hft
COPY --chown=hft:hft . .
RUN mkdir -p /app/.run && chown hft:hft /app/.run
USER hft

EXPOSE 8000
# The web server make run and compose use (HFT_WEB=uvicorn:2; docs/scale.md): two workers, the sans-io websocket
# implementation whose send waits on a full socket (what bounds a stalled browser), no per-message deflate, and no
# X-Forwarded-For trust (HFT_TRUSTED_PROXIES decides that).
CMD ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--lifespan", "off", "--ws", "websockets-sansio", \
     "--ws-per-message-deflate", "false", "--no-proxy-headers", "--no-access-log", "--timeout-graceful-shutdown", "3", \
     "hftweb.asgi:application"]
