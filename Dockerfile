# Build: docker build -t orchestrator .
# Run:   docker run -p 8080:8080 -v orchestrator-data:/data \
#          -e ORCHESTRATOR_AUTH_ENABLED=true -e ORCHESTRATOR_AUTH_PEPPER=… orchestrator
#        then: docker exec … orchestrator token create --name me --scope admin
#        (without authentication the server refuses to listen on 0.0.0.0 unless
#        ORCHESTRATOR_ALLOW_UNAUTHENTICATED=true)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p orchestrator-server \
 && cp target/release/orchestrator /usr/local/bin/orchestrator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --create-home orchestrator \
 && install -d -o orchestrator -g orchestrator /data/workspace
COPY --from=build /usr/local/bin/orchestrator /usr/local/bin/orchestrator
USER orchestrator
WORKDIR /data
ENV ORCHESTRATOR_BIND=0.0.0.0:8080 \
    ORCHESTRATOR_DATABASE_URL=sqlite:///data/orchestrator.db \
    ORCHESTRATOR_WORKSPACE_ROOT=/data/workspace
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/ready || exit 1
ENTRYPOINT ["orchestrator"]
CMD ["serve"]
