# nanoGPT's "poor man's configurator", as it ships: every --key=value overrides a global of the
# script that exec()s this file; a bare name is a config file. `--key value` is not accepted.
import sys
from ast import literal_eval

for arg in sys.argv[1:]:
    if '=' not in arg:
        assert not arg.startswith('--')
        config_file = arg
        exec(open(config_file).read())
    else:
        assert arg.startswith('--')
        key, val = arg.split('=')
        key = key[2:]
        if key in globals():
            try:
                attempt = literal_eval(val)
            except (SyntaxError, ValueError):
                attempt = val
            assert type(attempt) == type(globals()[key])  # noqa: E721 -- as nanoGPT ships it
            globals()[key] = attempt
        else:
            raise ValueError(f"Unknown config key: {key}")
