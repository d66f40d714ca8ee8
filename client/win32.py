"""Windows named pipes: the pipe's name and security, and who is on the other end.

Rules of this module:
- the top half is pure and runs anywhere (names, the SDDL string, the flags the
  pipe is made with), so Linux tests check what Windows will be given;
- every Win32 call lives below ``if sys.platform == "win32":`` (ctypes' ``WinDLL``
  exists only there, and mypy checks only the current platform's branch); on
  other platforms importing this module loads nothing but ``re``;
- a peer is this user when the user SID of its process token is ours: the pipe's
  DACL admits only our SID, and both ends check the other's process anyway (a
  pipe name is first come, first served: another user may have made it first);
- stdlib only (ctypes, _winapi): the client and the agent both use it.
"""

from __future__ import annotations

import re
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = [
    "PIPE_PREFIX",
    "MAX_PIPE_NAME",
    "is_pipe",
    "pipe_name",
    "pipe_sddl",
    "open_mode",
    "PIPE_MODE",
    "PIPE_REJECT_REMOTE_CLIENTS",
    "FILE_FLAG_FIRST_PIPE_INSTANCE",
    "SECURITY_SQOS_PRESENT",
    "SECURITY_IDENTIFICATION",
    "PeerCheckFailed",
]

PIPE_PREFIX: Final = "\\\\.\\pipe\\"
# The whole name, prefix included, is at most 256 characters (CreateNamedPipeW).
MAX_PIPE_NAME: Final = 256

PIPE_ACCESS_DUPLEX: Final = 0x00000003
FILE_FLAG_OVERLAPPED: Final = 0x40000000  # the Proactor loop does overlapped I/O on it
# CreateNamedPipeW fails (ERROR_ACCESS_DENIED) if anyone made the name first: nobody
# can sit on our name and be mistaken for the agent by it.
FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000
PIPE_TYPE_BYTE: Final = 0x0  # a byte stream, as the Unix socket: the frames carry their length
PIPE_READMODE_BYTE: Final = 0x0
PIPE_WAIT: Final = 0x0
# A client opens the pipe at identification level: the process at the other end may
# learn who it is, but never act as it (impersonate it), even before the client has
# checked whose pipe it reached.
SECURITY_SQOS_PRESENT: Final = 0x00100000
SECURITY_IDENTIFICATION: Final = 0x00010000  # SecurityIdentification << 16
# SMB clients from other machines are refused by the kernel, before any check of ours.
PIPE_REJECT_REMOTE_CLIENTS: Final = 0x00000008
PIPE_MODE: Final = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS
PIPE_UNLIMITED_INSTANCES: Final = 255
# As asyncio's windows_utils.BUFSIZE: a hint to the kernel, not a limit on frames.
PIPE_BUFSIZE: Final = 8192

_SID_RE: Final = re.compile(r"S-1-[0-9]+(?:-[0-9]+){1,15}")
# Characters a pipe name may not hold (the backslash) or that would make it hard to
# read back from a log line.
_UNSAFE_RE: Final = re.compile(r"[^A-Za-z0-9._-]")


class PeerCheckFailed(OSError):
    """Who is on the other end of a pipe could not be found out (the peer is refused)."""


def is_pipe(address: str) -> bool:
    return address.startswith(PIPE_PREFIX)


def pipe_name(sid: str, profile: str = "") -> str:
    """``\\\\.\\pipe\\credential-agent-<SID>[-<profile>]``: named after the user's SID, not
    the user's name (``CORP\\alice`` and a local ``alice`` are two users, with two pipes)."""
    if not _SID_RE.fullmatch(sid):
        raise ValueError(f"a pipe name needs the user's SID, not {sid!r}")
    name = f"{PIPE_PREFIX}credential-agent-{sid}" + (f"-{_UNSAFE_RE.sub('_', profile)}" if profile else "")
    if len(name) > MAX_PIPE_NAME:
        raise ValueError(f"the pipe name would be {len(name)} characters, over the {MAX_PIPE_NAME} Windows allows")
    return name


def pipe_sddl(sid: str) -> str:
    """The pipe's security descriptor: a protected DACL (nothing inherited) with one
    entry, full access for ``sid``; no other user, group, SYSTEM or Administrators."""
    if not _SID_RE.fullmatch(sid):
        raise ValueError(f"not a SID string: {sid!r}")
    return f"D:P(A;;GA;;;{sid})"


def open_mode(first: bool) -> int:
    """CreateNamedPipeW's dwOpenMode for the first instance of the name, or a later one."""
    return PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | (FILE_FLAG_FIRST_PIPE_INSTANCE if first else 0)


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    __all__ += [
        "current_sid",
        "sid_of_process",
        "client_pid",
        "server_pid",
        "create_pipe",
        "wait_exit",
        "set_error_mode",
    ]

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)

    _PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x1000
    _SYNCHRONIZE: Final = 0x00100000
    _TOKEN_QUERY: Final = 0x0008
    _TOKEN_USER: Final = 1  # TOKEN_INFORMATION_CLASS.TokenUser
    _SDDL_REVISION_1: Final = 1
    _INVALID_HANDLE: Final = wintypes.HANDLE(-1).value
    _WAIT_OBJECT_0: Final = 0
    _SEM_FAILCRITICALERRORS: Final = 0x0001
    _SEM_NOGPFAULTERRORBOX: Final = 0x0002
    _SEM_NOOPENFILEERRORBOX: Final = 0x8000

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", wintypes.LPVOID),
            ("bInheritHandle", wintypes.BOOL),
        ]

    def _fn(dll: ctypes.WinDLL, name: str, restype: Any, *argtypes: Any) -> Any:
        f = getattr(dll, name)
        f.restype, f.argtypes = restype, list(argtypes)
        return f

    _OpenProcess = _fn(_kernel32, "OpenProcess", wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    _GetCurrentProcess = _fn(_kernel32, "GetCurrentProcess", wintypes.HANDLE)
    _CloseHandle = _fn(_kernel32, "CloseHandle", wintypes.BOOL, wintypes.HANDLE)
    _LocalFree = _fn(_kernel32, "LocalFree", wintypes.HLOCAL, wintypes.HLOCAL)
    _WaitForSingleObject = _fn(_kernel32, "WaitForSingleObject", wintypes.DWORD, wintypes.HANDLE, wintypes.DWORD)
    _GetNamedPipeClientProcessId = _fn(
        _kernel32, "GetNamedPipeClientProcessId", wintypes.BOOL, wintypes.HANDLE, ctypes.POINTER(wintypes.ULONG)
    )
    _GetNamedPipeServerProcessId = _fn(
        _kernel32, "GetNamedPipeServerProcessId", wintypes.BOOL, wintypes.HANDLE, ctypes.POINTER(wintypes.ULONG)
    )
    _CreateNamedPipeW = _fn(
        _kernel32,
        "CreateNamedPipeW",
        wintypes.HANDLE,
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.POINTER(_SecurityAttributes),
    )
    _SetErrorMode = _fn(_kernel32, "SetErrorMode", wintypes.UINT, wintypes.UINT)
    _OpenProcessToken = _fn(
        _advapi32, "OpenProcessToken", wintypes.BOOL, wintypes.HANDLE, wintypes.DWORD, ctypes.POINTER(wintypes.HANDLE)
    )
    _GetTokenInformation = _fn(
        _advapi32,
        "GetTokenInformation",
        wintypes.BOOL,
        wintypes.HANDLE,
        ctypes.c_int,
        wintypes.LPVOID,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
    )
    _ConvertSidToStringSidW = _fn(
        _advapi32, "ConvertSidToStringSidW", wintypes.BOOL, wintypes.LPVOID, ctypes.POINTER(wintypes.LPWSTR)
    )
    _ConvertSddl = _fn(
        _advapi32,
        "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        wintypes.BOOL,
        wintypes.LPCWSTR,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.LPVOID),
        ctypes.POINTER(wintypes.ULONG),
    )

    def _fail(what: str) -> PeerCheckFailed:
        err = ctypes.get_last_error()
        return PeerCheckFailed(err, f"{what} failed: {ctypes.FormatError(err).strip()}")

    def _token_sid(process: int) -> str:
        """The user SID of a process handle's token, as a string (S-1-5-21-...)."""
        token = wintypes.HANDLE()
        if not _OpenProcessToken(process, _TOKEN_QUERY, ctypes.byref(token)):
            raise _fail("OpenProcessToken")
        try:
            size = wintypes.DWORD()
            _GetTokenInformation(token, _TOKEN_USER, None, 0, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            if not _GetTokenInformation(token, _TOKEN_USER, buf, size, ctypes.byref(size)):
                raise _fail("GetTokenInformation")
            # TOKEN_USER starts with SID_AND_ATTRIBUTES, whose first member is the PSID
            psid = ctypes.cast(buf, ctypes.POINTER(wintypes.LPVOID)).contents
            text = wintypes.LPWSTR()
            if not _ConvertSidToStringSidW(psid, ctypes.byref(text)):
                raise _fail("ConvertSidToStringSidW")
            try:
                return str(text.value)
            finally:
                _LocalFree(ctypes.cast(text, wintypes.HLOCAL))
        finally:
            _CloseHandle(token)

    _own_sid: str | None = None

    def current_sid() -> str:
        global _own_sid
        if _own_sid is None:
            _own_sid = _token_sid(_GetCurrentProcess())
        return _own_sid

    def sid_of_process(pid: int) -> str:
        process = _OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not process:
            raise _fail(f"OpenProcess({pid})")
        try:
            return _token_sid(process)
        finally:
            _CloseHandle(process)

    def _pipe_pid(fn: Any, handle: int, what: str) -> int:
        pid = wintypes.ULONG()
        if not fn(handle, ctypes.byref(pid)):
            raise _fail(what)
        return int(pid.value)

    def client_pid(handle: int) -> int:
        """The process on the client end of a connected server pipe handle."""
        return _pipe_pid(_GetNamedPipeClientProcessId, handle, "GetNamedPipeClientProcessId")

    def server_pid(handle: int) -> int:
        """The process that created the pipe a client handle is connected to."""
        return _pipe_pid(_GetNamedPipeServerProcessId, handle, "GetNamedPipeServerProcessId")

    def create_pipe(name: str, first: bool) -> int:
        """One overlapped instance of the pipe ``name`` that only this user may open."""
        sd = wintypes.LPVOID()
        if not _ConvertSddl(pipe_sddl(current_sid()), _SDDL_REVISION_1, ctypes.byref(sd), None):
            raise _fail("ConvertStringSecurityDescriptorToSecurityDescriptorW")
        try:
            sa = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), sd, False)
            handle = _CreateNamedPipeW(
                name,
                open_mode(first),
                PIPE_MODE,
                PIPE_UNLIMITED_INSTANCES,
                PIPE_BUFSIZE,
                PIPE_BUFSIZE,
                0,
                ctypes.byref(sa),
            )
            if handle is None or handle == _INVALID_HANDLE:
                err = ctypes.get_last_error()
                raise OSError(0, ctypes.FormatError(err).strip(), name, err)
            return int(handle)
        finally:
            _LocalFree(ctypes.cast(sd, wintypes.HLOCAL))

    def wait_exit(pid: int, timeout: float) -> bool:
        """Whether process ``pid`` is gone within ``timeout`` seconds (os.kill(pid, 0),
        the POSIX probe, would terminate it on Windows)."""
        process = _OpenProcess(_SYNCHRONIZE, False, pid)
        if not process:
            return True  # no such process (any more)
        try:
            return bool(_WaitForSingleObject(process, int(timeout * 1000)) == _WAIT_OBJECT_0)
        finally:
            _CloseHandle(process)

    def set_error_mode() -> bool:
        """No Windows Error Reporting dialog on a crash (which would hold the process,
        and its memory, on screen until someone answers it); True when it took effect."""
        wanted = _SEM_FAILCRITICALERRORS | _SEM_NOGPFAULTERRORBOX | _SEM_NOOPENFILEERRORBOX
        _SetErrorMode(wanted)
        return bool(_SetErrorMode(wanted) & wanted == wanted)  # SetErrorMode returns the previous mode
