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
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "hftweb.asgi:application"]
