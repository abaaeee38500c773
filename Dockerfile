# qalqan in a container: built from this checkout on rust:bookworm, run on
# debian:bookworm-slim as the non-root user qalqan.
#
#   docker build -t qalqan .
#   docker run -d --name qalqan -p 53:53/udp -p 53:53/tcp -v qalqan-state:/var/lib/qalqan qalqan
#   docker exec qalqan qalqan explain --config /etc/qalqan/qalqan.toml NAME
#
# The config is the Debian package's (contrib/deb/qalqan.toml: recursive,
# DNSSEC-validating, the shipped lists under /etc/qalqan/lists), listening on
# 0.0.0.0:53 for private client addresses, without the admin API (a token
# baked into an image would be everyone's). Your own: mount it read-only on
# /etc/qalqan/qalqan.toml, your lists under /etc/qalqan/lists.
# Port 53 as a non-root user: Docker 20.10+ sets
# net.ipv4.ip_unprivileged_port_start=0 in a container's network namespace;
# elsewhere add --sysctl net.ipv4.ip_unprivileged_port_start=53.
#
# Built by tests/package.sh only where a Docker engine runs (`docker info`
# succeeds). The machines this project is developed and tested on have the
# docker client but no engine, CI included: there the image is not built and
# the test says so, even under CI=true.

FROM rust:bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin qalqan \
    && strip target/release/qalqan

FROM debian:bookworm-slim
RUN useradd --system --user-group --home-dir /var/lib/qalqan --no-create-home --shell /usr/sbin/nologin qalqan \
    && install -d -o qalqan -g qalqan -m 0750 /var/lib/qalqan /var/log/qalqan
COPY --from=build /src/target/release/qalqan /usr/sbin/qalqan
COPY contrib/deb/qalqan.toml /etc/qalqan/qalqan.toml
COPY blocklists/allow.txt blocklists/regulator.txt /etc/qalqan/lists/
# the package's config, for a container: every address, private clients,
# no admin API, IPv4 authorities only (containers rarely route IPv6)
RUN sed -i \
        -e 's|^listen = \["127.0.0.1:53", "\[::1\]:53"\].*|listen = ["0.0.0.0:53"]|' \
        -e 's|^allow_clients = .*|allow_clients = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"]|' \
        -e '/^\[admin\]/,/^$/d' \
        /etc/qalqan/qalqan.toml \
    && printf '\n[recursion]\nipv6 = false\n' >>/etc/qalqan/qalqan.toml \
    && grep -q '^listen = \["0.0.0.0:53"\]' /etc/qalqan/qalqan.toml \
    && ! grep -q '^\[admin\]' /etc/qalqan/qalqan.toml \
    && chgrp -R qalqan /etc/qalqan && chmod 0640 /etc/qalqan/qalqan.toml \
    && /usr/sbin/qalqan check --config /etc/qalqan/qalqan.toml
USER qalqan
WORKDIR /var/lib/qalqan
VOLUME ["/var/lib/qalqan"]
EXPOSE 53/udp 53/tcp
# /healthz of the metrics endpoint (127.0.0.1:9153) with bash's /dev/tcp: no curl in the image
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9153 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/sbin/qalqan"]
CMD ["run", "--config", "/etc/qalqan/qalqan.toml"]
