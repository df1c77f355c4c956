"""The `corridor` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from corridor import __version__
from corridor.common import logs


def build_parser() -> argparse.ArgumentParser:
    from corridor import cli_controller

    parser = argparse.ArgumentParser(
        prog="corridor",
        description=__doc__,
        epilog="Exit codes: 0 done; 1 refused or failed (one line per problem on stderr); "
        "2 wrong arguments or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"corridor {__version__}")
    cli_controller.add_client_options(parser, default=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="load the real tables and show what the data plane does")
    demo.add_argument("--data", help="directory of the routing tables (default: ../shared/data)")
    demo.add_argument(
        "--full", action="store_true", help="also load the full IPv4 table (takes minutes)"
    )
    demo.set_defaults(run=_run_demo)

    from corridor.agent.config import EXAMPLE

    agent = sub.add_parser(
        "agent",
        help="serve corridor.v1.Dataplane on this node, hosting the FIB",
        epilog=f"A configuration file:\n\n{EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent.add_argument("--config", required=True, metavar="FILE", help="the agent's TOML file")
    agent.add_argument("--check", action="store_true", help="check the file, then exit")
    logs.add_level_argument(agent)
    agent.add_argument(
        "--reset-election",
        action="store_true",
        help="tell the agent running with this file to forget its highest election id (over "
        "its Unix socket), so that the controller's next write takes the election again",
    )
    agent.set_defaults(run=_run_agent)

    lab = sub.add_parser(
        "lab", help="the test lab: namespaces gen, dut and sink joined by veth pairs"
    )
    lab.add_argument("action", choices=("up", "down", "status"))
    lab.add_argument(
        "--prefix", default="cor-", help="namespace name prefix (default: cor-; must start so)"
    )
    lab.set_defaults(run=_run_lab)

    cli_controller.add_parsers(sub)

    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(run=lambda args: _run_completion(parser, args.shell))
    return parser


def _run_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """`eval "$(corridor completion bash)"`, or the output saved where the shell looks."""
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from corridor import demo

    return demo.run(args.data, args.full)


def _run_agent(args: argparse.Namespace) -> int:
    from corridor.agent import main

    if args.reset_election:
        return main.reset_election(args.config)
    return main.run(args.config, check_only=args.check, log_level=args.log_level)


def _run_lab(args: argparse.Namespace) -> int:
    from corridor import lab

    return lab.run(args.action, args.prefix)


def main(argv: list[str] | None = None) -> int:
    # gRPC's C core logs on its own (absl's format, straight to stderr, outside the log's
    # shape), and by default at INFO: a refused TLS handshake per line. Errors only, unless
    # the operator asks for more (GRPC_VERBOSITY=INFO); read when grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`corridor route list | head`): stop quietly, as the shell's
        # tools do, and keep the interpreter's last flush from writing a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
