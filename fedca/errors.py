"""The one exception type that reaches users as a single-line message and exit code 2."""


class FedcaError(Exception):
    """A problem with the user's input (config, data file, arguments).

    The message is one line that names the culprit (a config key, a file and line, a
    dataset) and, where there is one, the fix. The CLI prints it as ``error: <message>``
    and exits with code 2, without a traceback.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
