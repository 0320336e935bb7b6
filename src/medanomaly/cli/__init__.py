"""Command-line interface: ``medanomaly <command>``; one module per subcommand."""
