"""The one exception type for bad user input: its message is a single line naming file and field."""


class InputError(Exception):
    """Bad input (missing file, malformed record, wrong checksum, bad config).

    The CLI prints the message as one line and exits with status 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
