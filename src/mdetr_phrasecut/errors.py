"""The one exception type for bad user input: its message is a single line naming file and field."""
import re

# torch's DataLoader re-raises a worker's exception as `type(e)(f"Caught {name} in DataLoader worker process N.
# \nOriginal Traceback ...\n...\nmodule.InputError: message")`; only the message is kept.
_WORKER_WRAP = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s+Original Traceback.*?"
                          r"^[\w.]*InputError: (?P<message>.*?)\s*\Z", re.S | re.M)


class InputError(Exception):
    """Bad input (missing file, malformed record, wrong checksum, bad config).

    The CLI prints the message as one line and exits with status 2.
    """

    def __init__(self, message: str):
        message = str(message)
        if wrapped := _WORKER_WRAP.match(message):
            message = wrapped["message"]
        super().__init__(" ".join(message.split()))
