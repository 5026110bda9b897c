# The worker image for docker-compose.yml (users with Docker; not built in CI here, where
# `docker-compose config` validates the compose file).

# The compiled core (rust/execcore), built from source into an abi3 wheel for Python >= 3.11.
# MATURIN is the version requirements.lock pins (tests/unit/test_docker_files.py checks they agree).
FROM rust:1-slim-bookworm AS core
ARG MATURIN=1.16.0
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY rust/execcore ./rust/execcore
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "maturin==${MATURIN}" \
    && /venv/bin/maturin build --release --compatibility linux -i python3 -m rust/execcore/Cargo.toml -o /wheels

FROM python:3.11-slim
WORKDIR /app
# Runtime dependencies only, every file checked against its hash (requirements-runtime.lock;
# the dev tools of requirements.lock stay out of the image).
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-runtime.lock
COPY --from=core /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN pip install --no-cache-dir --no-deps .
# topics.yaml and schemas/ (Avro topics take their schema ids from schemas/registry.json), and the
# bundled sample for the compose file's producer.
COPY topics.yaml ./
COPY schemas ./schemas
COPY examples ./examples
# Non-root: the worker needs nothing but its outbox volume.
RUN useradd --create-home --uid 10001 execworker && mkdir -p /var/outbox && chown execworker /var/outbox
USER execworker
ENTRYPOINT ["execworker"]
CMD ["run", "--outbox", "/var/outbox"]
