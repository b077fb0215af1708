# NATS server image for docker-compose.yml: the nats-server that `make
# tools` pins (go.mod's github.com/nats-io/nats-server/v2), built static,
# on an empty base. Build context bin/image (`make image-bin`); nothing is
# pulled:
#
#   make image-bin
#   docker build -f deploy/docker/nats.Dockerfile -t keyrelay-nats:local bin/image
#
# Runs as uid/gid 65532 with no shell; /data (owned by 65532) is for
# JetStream's store. /usr/local/bin/healthcheck serves the compose file's
# healthcheck on the monitoring port's /healthz.
FROM scratch
COPY passwd group /etc/
COPY tmp/ /tmp/
COPY nats-server healthcheck /usr/local/bin/
COPY --chown=65532:65532 empty/ /data/
USER 65532:65532
# Clients, routes, monitoring.
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--config", "/etc/nats/nats.conf"]
