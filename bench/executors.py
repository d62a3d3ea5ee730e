"""The names of the sweep executors (a light module: the command line lists them without torch)."""

EXECUTORS = ("local", "submitit", "submitit-local", "slurm", "ray")
INSTALL_HINT = "pip install 'robustbench-lite[sweep]'"
