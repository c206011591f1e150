"""Running a command line's `main` in the test's own process, as the CLI tests do."""


def run_main(main, argv, capsys) -> tuple[int, str]:
    """`main(argv)`'s exit status and the last line of its stderr ("" if none), having checked that
    it printed no traceback (argparse's own errors exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip().splitlines()[-1] if err.strip() else ""
