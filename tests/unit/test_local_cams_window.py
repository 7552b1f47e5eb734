"""The local CAMS endpoint's rate window: calls count when they arrive, in whatever order they are decided."""

from __future__ import annotations

from chatapp_devkit.local_cams.backend import fits_window


def test_the_eleventh_arrival_within_a_second_does_not_fit() -> None:
    arrivals = [k * 0.1 for k in range(10)]  # 0.0 .. 0.9
    assert not fits_window(arrivals, 0.95, 10)
    assert not fits_window(arrivals, 0.999, 10)
    assert fits_window(arrivals, 1.0, 10), "the window is half-open: the first arrival is 1 s old"
    assert fits_window(arrivals[1:], 0.95, 10)


def test_a_call_decided_after_a_later_arrival_is_checked_on_both_sides() -> None:
    """Two connections: the call that arrived first is parsed last. It must not fit between the
    calls already accepted if that puts eleven arrivals into one second."""
    arrivals = [0.5 + k * 0.1 for k in range(10)]  # 0.5 .. 1.4: ten accepted, on another connection
    assert not fits_window(arrivals, 0.45, 10), "[0.45, 1.45) would hold eleven calls"
    assert fits_window(arrivals, 0.35, 10), "[0.35, 1.35) holds ten, and 1.4 is more than 1 s after 0.35"


def test_no_limit_worth_of_calls_always_fits() -> None:
    assert fits_window([], 5.0, 1)
    assert not fits_window([5.0], 5.5, 1)
    assert fits_window([5.0], 6.0, 1)
    assert fits_window([5.0], 4.0, 1)
    assert not fits_window([5.0], 4.5, 1), "an earlier arrival decided later still shares the window"


def test_a_call_arrives_when_its_bytes_reach_the_host_not_when_a_thread_reads_them() -> None:
    """The endpoint's reads carry the kernel's receive time (Linux, where the service runs), so a
    handler thread that gets round to reading late does not move the call in the rate window."""
    import socket
    import time

    from chatapp_devkit.local_cams.server import _ArrivalStampingReader

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        connection, _ = server.accept()
        with client, connection:
            reader = _ArrivalStampingReader(connection)
            buffer = bytearray(1024)
            # the kernel turns receive stamps on asynchronously after the first socket asks for
            # them: probe until a read is stamped before it returns
            deadline = time.monotonic() + 5
            while True:
                client.sendall(b"x")
                time.sleep(0.05)
                assert reader.readinto(buffer) > 0
                if reader.received_at < time.time() - 0.03:
                    break
                assert time.monotonic() < deadline, "the kernel never stamped a read"
            sent_at = time.time()
            client.sendall(b"POST /?x=1 HTTP/1.1\r\n")
            time.sleep(0.3)  # the reading thread is busy elsewhere
            assert reader.readinto(buffer) > 0
            assert sent_at - 0.01 <= reader.received_at < sent_at + 0.1, f"stamped {reader.received_at - sent_at:.3f} s after the send"


def test_without_kernel_stamps_a_read_is_stamped_when_it_returns(monkeypatch) -> None:
    import socket
    import time

    from chatapp_devkit.local_cams import server

    monkeypatch.setattr(server, "_SO_TIMESTAMPNS", None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        connection, _ = listener.accept()
        with client, connection:
            reader = server._ArrivalStampingReader(connection)
            client.sendall(b"GET / HTTP/1.1\r\n")
            time.sleep(0.2)
            before = time.time()
            assert reader.readinto(bytearray(64)) > 0
            assert before <= reader.received_at <= time.time()
