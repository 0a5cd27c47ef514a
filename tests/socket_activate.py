#!/usr/bin/env python3
"""Starts a program the way systemd's socket activation does: a listening
TCP socket on fd 3, LISTEN_FDS=1 and LISTEN_PID set to the program's own pid
(exec keeps the pid), optionally LISTEN_FDNAMES.

Usage: socket_activate.py ADDR PROGRAM [ARGS...]
Prints "bound HOST:PORT" on stderr before exec.
"""
import os
import socket
import sys

host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host.strip("[]"), int(port)))
s.listen(128)
print("bound %s:%d" % s.getsockname()[:2], file=sys.stderr, flush=True)
if s.fileno() == 3:
    os.set_inheritable(3, True)  # dup2(3, 3) would leave close-on-exec set
else:
    os.dup2(s.fileno(), 3, inheritable=True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ.pop("LISTEN_FDNAMES", None)
os.execv(sys.argv[2], sys.argv[2:])
