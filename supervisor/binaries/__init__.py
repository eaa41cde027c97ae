"""Binary identity of the agent's connections to the proxy (ARCHITECTURE.md 11).

* ``procnet``  parsing ``/proc/<pid>/net/tcp{,6}`` lines (pure): the socket inode of a
               connection from its two addresses
* ``globs``    policy binary patterns: ``*`` one path component, ``**`` any (pure)
* ``procfs``   the I/O: the processes of the sandbox holding that socket, their
               executables and their ancestors' (never ``cmdline``)
* ``trust``    SHA-256 trust on first use per executable path
* ``identity`` the lookup the proxy calls once per connection, and the judgement
"""
