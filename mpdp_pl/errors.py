"""The error of bad user input, and the file that marks a failed run: importable by every layer
of the package, the report's included, without importing torch."""

FAILED_MARKER = "failed.txt"  # written into the run directory when a run stops at nonfinite_limit


class ConfigError(ValueError):
    """Bad user input (config keys, values, CLI arguments); reported as one line, exit code 2."""

    def __str__(self) -> str:  # one line, whatever a wrapped library's message holds
        return " ".join(super().__str__().split())
