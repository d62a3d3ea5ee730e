"""The core: registries, method and protocol interfaces, trainer, results and leaderboards."""
