FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=canary.settings_production

WORKDIR /app
# The runtime only: test and lint tools are in requirements-dev.txt.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home canary && mkdir -p /app/var /app/staticfiles && chown -R canary /app
USER canary

EXPOSE 8000
ENV CANARY_BIND=0.0.0.0:8000
CMD ["./scripts/serve.sh"]
