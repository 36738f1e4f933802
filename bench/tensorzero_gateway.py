"""TensorZero's gateway for `make bench`, as its Python package ships it.

TensorZero publishes its gateway (Rust) as a container image and a binary; from PyPI it comes
inside the `tensorzero` package, which runs the same HTTP gateway in-process on a port of its
own on 127.0.0.1 (what its `patch_openai_client` starts). This script writes the benchmark's
configuration with the mock's address, starts that gateway, prints its OpenAI-compatible base
URL and keeps the process alive until it is stopped. Run with bench/.venv-tensorzero's Python.

    python bench/tensorzero_gateway.py --upstream http://127.0.0.1:PORT --config OUT.toml
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import tensorzero

TEMPLATE = Path(__file__).resolve().parent / "configs" / "tensorzero.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the mock provider's base URL")
    parser.add_argument("--config", required=True, help="where to write the configuration")
    args = parser.parse_args()
    config = Path(args.config)
    config.write_text(TEMPLATE.read_text().replace("MOCK_URL", args.upstream.rstrip("/")))
    # Blocked before the gateway's threads start, so they inherit the mask and only
    # `sigwait` below takes the signal.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    gateway = tensorzero._start_http_gateway(
        config_file=str(config),
        clickhouse_url=None,
        postgres_url=None,
        valkey_url=None,
        async_setup=False,
    )
    print(f"BASE_URL {gateway.base_url}", flush=True)
    signal.sigwait(stop)
    gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
