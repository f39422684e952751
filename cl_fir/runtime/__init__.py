"""What a run executes on, below everything else: the device and precision (``device``), the
host's copies of data it sent there (``host_copies``) and the count of host waits
(``host_syncs``), the data-parallel process group (``distributed``), and the shim through
which avalanche-lib is used (``avalanche``); and the fork server that starts a sweep's cell
processes with the large libraries already imported (``fork_server``, ``warm_imports``).
Every layer may import it; it imports nothing of cl-fir but ``errors``."""
