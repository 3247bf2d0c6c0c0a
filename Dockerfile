# Production image for the Airflow services (api-server, scheduler, dag-processor,
# triggerer, Celery workers). The official image already carries the Celery, Redis
# and Postgres providers; we add the pinned llmops stack and the project itself.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root requirements.txt pyproject.toml README.md /opt/llmops/
COPY --chown=airflow:root llmops /opt/llmops/llmops
RUN pip install --no-cache-dir -r /opt/llmops/requirements.txt \
 && pip install --no-cache-dir --no-deps nvidia-pytriton==0.7.0 \
 && pip install --no-cache-dir --no-deps /opt/llmops

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/llmops/include

ENV LLMOPS_HOME=/opt/llmops-home \
    LLMOPS_CONFIG=/opt/llmops/include/llmops.yaml
