"""The pins of a requirements file."""


def read_requirements(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"{path.name}: {line!r} is not pinned with =="
            pins[name.lower()] = ver
    return pins
