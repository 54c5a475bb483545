"""The original example scripts, as functions that take the module (``sp``) they run on.

Each keeps the script's calls (names, arguments, the loop shapes, the 10 ms rest of the
server loops), with three changes for tests: servers listen on 127.0.0.1 port 0 (the
caller passes the Server in), clients take the port, and results are returned instead of
printed. The originals: simpleBroadcast(2).py, simpleChat(2).py,
test_serpy2_1_pingpong{Server,Client}.py, test_serpy2_2_instrument{Server,Client}.py.
"""

import warnings
from time import sleep

import images

ADR = "127.0.0.1"
STOP = "/KTHXBYE"


def broadcast_server(sp, s, v2):
    """simpleBroadcast.py (v1) / simpleBroadcast2.py (v2): every message goes to every
    other connection (v1: in the mode it came in, with force_mode); /KTHXBYE stops it."""
    stop = STOP if v2 else STOP.encode()
    seen = []
    stop_flag = False
    while not stop_flag:
        read_conn_list = s.readableConnections()
        conn_list = s.getConnectionsList()
        for rc in read_conn_list:
            data = rc.getData()
            seen.append(data)
            if data == stop:
                stop_flag = True
                break
            for c in conn_list:
                if c != rc:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if v2:
                            c.sendData(data)
                        else:
                            c.sendData(data, mode=rc.in_mode, force_mode=True)
        if not read_conn_list:
            sleep(0.01)  # the script's own rest between polls
    s.closeServer()
    return seen


def pingpong_server(sp, s):
    """test_serpy2_1_pingpongServer.py: sends every message back to its sender."""
    count = 0
    stop_flag = False
    while not stop_flag:
        read_conn_list = s.readableConnections()
        for rc in read_conn_list:
            data = rc.getData()
            if data == STOP:
                stop_flag = True
                break
            rc.sendData(data)
            count += 1
        if len(read_conn_list) == 0:
            sleep(0.01)
    s.closeServer()
    return count


def pingpong_client(sp, port, cycles=3):
    """test_serpy2_1_pingpongClient.py: sends six values on a fresh connection per cycle
    and counts the ones that do not come back as sent."""
    pperr = 0
    for _ in range(cycles):
        c = sp.Connection(auto_restart=True).connect(ADR, port)
        sendlist = [123, "hello", 12.35, -1e6, 600000, "yes µù"]
        for s in sendlist:
            c.sendData(s)
        for s in sendlist:
            try:
                t = c.getData(timeout=10)
            except sp.queue.Empty:
                t = "*** timeout ***"
            if not (s == t and type(s) is type(t)):
                pperr += 1
        c.close()
    return pperr


def stop_server(sp, port):
    """The scripts' last step: a fresh connection sends /KTHXBYE."""
    c = sp.Connection(auto_restart=False).connect(ADR, port)
    c.sendData(STOP)
    return c


def instrument_server(sp, s, side):
    """test_serpy2_2_instrumentServer.py: an int p is answered with the image for p."""
    sent = 0
    stop_flag = False
    while not stop_flag:
        read_conn_list = s.readableConnections()
        for rc in read_conn_list:
            data = rc.getData()
            if data == STOP:
                stop_flag = True
                break
            elif type(data) == int:
                rc.sendData(images.image(data, side))
                sent += 1
        if len(read_conn_list) == 0:
            sleep(0.01)
    s.closeServer()
    return sent


def instrument_client(sp, port, side, cycles=2):
    """test_serpy2_2_instrumentClient.py: sends a mix of values; only the ints are
    answered, each with an image that must be the expected one. Returns (frames, errors)."""
    frmrcvd = 0
    nerr = 0
    for _ in range(cycles):
        c = sp.Connection(auto_restart=True).connect(ADR, port)
        sendlist = [1, "hello", 12.35, -1e6, 12, 30, "yes éµù utf8"]
        expectlist = []
        for s in sendlist:
            c.sendData(s)
            if type(s) is int:
                expectlist.append(s)
        for expect in expectlist:
            try:
                t = c.getData(timeout=20)
            except sp.queue.Empty:
                nerr += 1
                continue
            if type(t) is not bytes:
                nerr += 1
            elif t == images.image(expect, side):
                frmrcvd += 1
            else:
                nerr += 1
        c.close()
    return frmrcvd, nerr
