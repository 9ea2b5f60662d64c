"""The error of bad user input, importable by every layer of the package."""


class ConfigError(ValueError):
    """Bad user input (config keys, values, CLI arguments); reported as one line, exit code 2."""

    def __str__(self) -> str:  # one line, whatever a wrapped library's message holds
        return " ".join(super().__str__().split())
