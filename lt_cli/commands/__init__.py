"""One thin module per subcommand: parse flags, call a library function."""
