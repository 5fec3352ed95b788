"""bench/outputs.py: the MQTT on/off per-frame cost runs against a real Mosquitto and every result of the
"on" case reaches the broker. Figures are printed by `make bench`, never asserted here."""

from outputs_helpers import need_mosquitto

from bench import outputs as output_bench
from bench.__main__ import mqtt_rows


def test_mqtt_cost_measures_both_cases(bundle):
    need_mosquitto()
    cost = output_bench.mqtt_cost(bundle, "int8", threads=1, frames=50, rounds=5)
    assert set(cost) == {"off", "on"}
    assert all(cost[case]["step_ms"] > 0 and cost[case]["cpu_ms"] > 0 for case in cost)
    assert cost["on"]["written"] == 50 + 20  # the measured frames and the warm-up, all published
    rows = mqtt_rows(cost)
    assert len(rows) == 2 and "MQTT off / on" in rows[0][0] and "x)" in rows[0][1]
    assert "needs mosquitto" in mqtt_rows(None)[0][1]
