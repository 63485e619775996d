# syntax=docker/dockerfile:1
#
# unlock-bot container image: a builder stage makes the wheel and a virtual environment, the final stage
# carries only that environment (no compilers, no pip cache, no source tree) and runs as a non-root user.
#
#   docker build -t unlock-bot .
#   docker run --rm -p 3000:3000 \
#     --env-file ./unlock-bot.env \
#     -v ./policy.yml:/etc/unlock-bot/policy.yml:ro \
#     -v unlock-bot-state:/var/lib/unlock-bot \
#     unlock-bot
#
# unlock-bot.env holds SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, HUAWEICLOUD_SDK_AK/SK/PROJECT_ID,
# MODELARTS_REGION, DATABASE_URL … (design.md, "Environment"); keep it out of the image and out of git.
# Socket Mode instead of HTTP:  docker run … unlock-bot serve --socket-mode   (needs SLACK_APP_TOKEN).
# Check settings and policy:    docker run … unlock-bot check --probe

# ---- builder ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot

# The project's own wheel first (no dependencies), then that wheel with its dependencies into /opt/venv.
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed even here.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/unlock-bot --version

# ---- final -----------------------------------------------------------------------------------------------
FROM python:3.11-slim AS final

# Same base image, same /usr/local/bin/python3.11: the venv copied from the builder works unchanged.
COPY --from=builder /opt/venv /opt/venv

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin unlockbot \
    && mkdir -p /app /etc/unlock-bot /var/lib/unlock-bot \
    && chown unlockbot:unlockbot /app /var/lib/unlock-bot

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    UNLOCK_BOT_POLICY=/etc/unlock-bot/policy.yml \
    UNLOCK_BOT_STATE_DIR=/var/lib/unlock-bot

WORKDIR /app
# The default SQLite database (DATABASE_URL unset) lives here; mount a volume to keep it across restarts.
VOLUME ["/var/lib/unlock-bot"]
USER 10001

EXPOSE 3000

# slim has no curl: ask /healthz with the standard library. Plain liveness; /readyz also checks the database.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]

ENTRYPOINT ["unlock-bot"]
CMD ["serve"]
