# The worker image for docker-compose.yml (users with Docker; not built in CI here).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY worker ./worker
RUN pip install --no-cache-dir -r requirements.lock && pip install --no-cache-dir --no-deps .
COPY topics.yaml ./
COPY examples ./examples
# Non-root: the worker needs nothing but its outbox volume.
RUN useradd --create-home --uid 10001 execworker && mkdir -p /var/outbox && chown execworker /var/outbox
USER execworker
ENTRYPOINT ["execworker"]
CMD ["run", "--outbox", "/var/outbox"]
