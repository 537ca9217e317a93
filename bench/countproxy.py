"""A TCP proxy that counts what an S3 client downloads: bytes sent by the server and GET
requests, for bench/s3.sh's restore comparison (the same proxy for vault and restic).

Usage: python3 bench/countproxy.py LISTEN_PORT UPSTREAM_PORT COUNTS_FILE
Writes "<bytes down> <GETs>" to COUNTS_FILE on SIGTERM (and every second)."""
import asyncio, signal, sys

listen, upstream, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
down = 0
gets = 0


async def pipe(reader, writer, count):
    global down, gets
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if count:
                down += len(data)
            else:
                # Request heads start lines; the clients send no bodies when restoring.
                gets += data.count(b"GET /")
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(cr, sw, False), pipe(sr, cw, True))


def dump():
    with open(out, "w") as f:
        f.write(f"{down} {gets}\n")


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        while not stop.done():
            dump()
            await asyncio.wait([stop], timeout=1)
    dump()


asyncio.run(main())
