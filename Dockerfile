# Onramp: one image for web, worker, beat and the sandbox (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Import the project from /app, not from the copy pip puts in site-packages, so
    # BASE_DIR (templates/, static/) is /app.
    PYTHONPATH=/app \
    ONRAMP_VAR_DIR=/app/var

WORKDIR /app

RUN groupadd --system onramp && useradd --system --gid onramp --home-dir /app onramp

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml ./
COPY portal ./portal
COPY onboarding ./onboarding
COPY releases ./releases
COPY costs ./costs
RUN pip install .

COPY manage.py ./
COPY templates ./templates
COPY static ./static
RUN mkdir -p /app/var /var/lib/onramp-sandbox && chown onramp:onramp /app/var /var/lib/onramp-sandbox

USER onramp
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "--no-control-socket"]
