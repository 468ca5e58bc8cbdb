"""Running a management command as a shell would, in this process: exit code, stdout, stderr."""
import io
from contextlib import redirect_stderr, redirect_stdout

from django.core.management import execute_from_command_line


def run_command(*args: str) -> tuple[int, str, str]:
    """`manage.py *args`: what the shell would see. Closes the database connections when done,
    as Django does after a command, so use it with transactional_db."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            execute_from_command_line(["manage.py", *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()
