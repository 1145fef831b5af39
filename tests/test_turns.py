"""Turns: n holders at a time, a released slot handed to the longest waiter."""

import threading
import time

import pytest

from serving.turns import Admission, Turns


def wait_until(condition, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_waiters_get_their_turn_in_arrival_order_even_if_the_releaser_asks_again():
    turns = Turns(1)
    order: list[int] = []
    turns.__enter__()  # the holder

    def take(i: int) -> None:
        with turns:
            order.append(i)

    threads = []
    for i in range(4):
        thread = threading.Thread(target=take, args=(i,))
        thread.start()
        threads.append(thread)
        wait_until(lambda n=i + 1: turns.waiting == n)  # queued in this order
    turns.__exit__(None, None, None)
    take(99)  # the releaser asks again at once: it queues behind the four, never first
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 99]


def test_at_most_n_hold_at_once():
    turns = Turns(2)
    turns.__enter__()
    turns.__enter__()  # two holders: the third waits
    entered = threading.Event()

    def third() -> None:
        with turns:
            entered.set()

    thread = threading.Thread(target=third)
    thread.start()
    wait_until(lambda: turns.waiting == 1)
    assert not entered.is_set()
    turns.__exit__(None, None, None)
    assert entered.wait(10)
    thread.join(10)
    turns.__exit__(None, None, None)
    with turns, turns:  # both slots free again
        assert turns.waiting == 0


def test_no_turns_is_an_error():
    with pytest.raises(ValueError, match="n >= 1"):
        Turns(0)


def test_enter_says_whether_the_caller_waited():
    turns = Turns(1)
    assert turns.enter() == Admission.AT_ONCE
    assert turns.enter(max_waiting=0) == Admission.REFUSED and not Admission.REFUSED
    got: list[Admission] = []
    thread = threading.Thread(target=lambda: got.append(turns.enter()))
    thread.start()
    wait_until(lambda: turns.waiting == 1)
    turns.leave()
    thread.join(10)
    assert got == [Admission.AFTER_WAITING]
    turns.leave()
