"""Imported once by the fork server that starts csst's workers (workers.mp_context).

Workers forked by a fork server are its children, not the command's: their
`die_with_parent` watches the fork server, and each worker holds the fork
server open. So the fork server itself must die with the command: importing
this module asks the kernel to SIGKILL it when the command exits, however the
command ends (a SIGKILL included), and its workers follow.
"""

from csst_data.workers import die_with_parent

die_with_parent()
