"""Run a ClickHouse server from PyPI chdb-core (the ClickHouse engine as a Python module).

    python serve.py DATADIR RUNDIR

RUNDIR holds config.xml (ports, listen_host, users_config) and users.xml; the engine reads
./config.xml, so the working directory must be RUNDIR. DATADIR is the database path (tables,
metadata). The blocking query below opens the HTTP and native listeners and keeps them serving
(one sleeping row per second for ~31 years). SIGTERM/SIGINT end the process; MergeTree parts
that were committed before that are on disk and are loaded again on the next start.
Written for scripts/stack.sh; see /work/shared/NOTES.md "A current ClickHouse locally".
"""
import os
import signal
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: serve.py DATADIR RUNDIR", file=sys.stderr)
        return 2
    datadir = os.path.abspath(sys.argv[1])
    rundir = os.path.abspath(sys.argv[2])
    os.makedirs(datadir, exist_ok=True)
    # The blocking call below never returns to the interpreter, so Python-level handlers would
    # never run: keep the default (terminate) disposition for SIGTERM and SIGINT.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    import chdb._chdb as _chdb  # importing chdb chdirs into its package dir and back

    os.chdir(rundir)
    print(f"serve.py: pid {os.getpid()} engine chdb-core {getattr(sys.modules.get('chdb'), '__version__', '?')}"
          f" data {datadir} config {rundir}/config.xml", flush=True)
    _chdb.query(
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT sleepEachRow(1) FROM numbers(1000000000) FORMAT Null SETTINGS max_block_size=1",
        "TabSeparated",
        path=datadir,
    )
    print("serve.py: serving query returned; exiting", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
