from edgekit.cli import entry

entry()
