#!/usr/bin/env python3
"""Offline self-test of canary_redis.py's analysis (no server needed): python3 test_canary_redis.py

Synthetic logs with made-up timestamps; the checks are on counting and on which write ends
the outage, never on how long anything took on this machine."""
import os
import sys
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canary_redis as c  # noqa: E402


def ack(seq, t, srv="a:1"):
    return {"seq": seq, "t_send": t - 0.001, "t_ack": t, "srv": srv, "wait_n": 1}


def err(seq, t, phase="connect", set_ok=False):
    e = {"seq": seq, "t_send": t - 0.001, "t_err": t, "err": "ConnectionError: x", "phase": phase}
    if set_ok:
        e.update(set_ok=True, wait_n=0)
    return e


class Analyse(unittest.TestCase):
    def test_outage_ends_at_first_ack_after_first_failure(self):
        # seq 3 is acked after the fault timestamp but before the first failure: counted, but
        # it does not end the outage; seq 6 does.
        attempts = [ack(1, 100.0), ack(2, 100.01), ack(3, 100.03), err(4, 100.04), err(5, 101.0),
                    ack(6, 102.5, "b:2"), ack(7, 102.51, "b:2")]
        r = c.analyse(attempts, [], {1, 2, 3, 6, 7}, fault_ts=100.02)
        self.assertEqual(r["acks_between_fault_and_first_error"], 1)
        self.assertEqual(r["fault_to_first_ack_s"], round(102.5 - 100.02, 4))
        self.assertEqual(r["first_ack_after_fault_srv"], "b:2")
        self.assertEqual(r["failed_after_fault"], 2)
        self.assertEqual(r["lost_acked"], 0)
        self.assertTrue(r["ok"])

    def test_lost_confirmed_and_unconfirmed_present(self):
        # 2 confirmed but missing on the final primary; 4 failed (WAIT short) but present.
        attempts = [ack(1, 1.0), ack(2, 1.01), err(3, 1.02, "set"), err(4, 1.03, "wait", set_ok=True), ack(5, 2.0)]
        r = c.analyse(attempts, [], {1, 4, 5}, fault_ts=1.015)
        self.assertEqual(r["lost_acked"], 1)
        self.assertEqual(r["lost_acked_seqs"], [2])
        self.assertEqual(r["unacked_but_committed"], 1)
        self.assertEqual(r["failed_set_ok_wait_short"], 1)
        self.assertFalse(r["ok"])

    def test_never_recovered(self):
        attempts = [ack(1, 1.0), err(2, 1.1), err(3, 1.2)]
        r = c.analyse(attempts, [{"ev": "stop", "t": 5.0}], {1}, fault_ts=1.05)
        self.assertFalse(r["recovered"])
        self.assertIsNone(r["fault_to_first_ack_s"])
        self.assertEqual(r["rto_max_gap_s"], 4.0)

    def test_present_not_attempted_is_flagged(self):
        r = c.analyse([ack(1, 1.0)], [], {1, 99})
        self.assertEqual(r["present_not_attempted"], 1)
        self.assertFalse(r["ok"])


if __name__ == "__main__":
    unittest.main()
