# The test environment of netman: Debian 12 with a Rust toolchain; the image runs exactly
# scripts/setup (system packages + build) and then scripts/test, like .ci/run.
#
#   scripts/docker-test            build the image and run the suite in a privileged container
#
# The tests create network namespaces, veth pairs, VXLAN devices and nftables/iptables rules inside
# namespaces they make, start PostgreSQL and MariaDB: the container must be --privileged (and gets
# its own network namespace from Docker, so nothing on the Docker host is touched).
FROM debian:12

ARG RUST_VERSION=1.95.0
ENV DEBIAN_FRONTEND=noninteractive \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH

# Only what is needed to fetch rustup and compile (and systemd-analyze, which tests/systemd_units.rs
# uses and a minimal image lacks); everything else comes from scripts/setup.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl gcc libc6-dev make file systemd \
 && rm -rf /var/lib/apt/lists/* \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal \
      --default-toolchain "$RUST_VERSION" -c rustfmt,clippy -t x86_64-unknown-linux-musl

WORKDIR /netman
COPY . /netman

CMD ["bash", "-c", "scripts/setup && scripts/test"]
