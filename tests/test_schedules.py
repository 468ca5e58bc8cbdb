"""The week of the retraining schedule, written once in clsite.schedules."""
from clsite import schedules as schedule


def test_the_week_reads_as_cron_numbers_it():
    assert schedule.DAYS == {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 0}
    assert schedule.DAY_NAMES == {"1": "Monday", "2": "Tuesday", "3": "Wednesday", "4": "Thursday", "5": "Friday",
                                  "6": "Saturday", "0": "Sunday"}
    assert {n: schedule.day_of(n) for n in "01234567"} == {
        "1": "mon", "2": "tue", "3": "wed", "4": "thu", "5": "fri", "6": "sat", "0": "sun", "7": "sun"}
    assert schedule.day_of("1-5") is None and schedule.day_of("*") is None


def test_every_day_goes_from_its_name_to_cron_and_back_to_words():
    for key, name in schedule.WEEKDAYS:
        assert schedule.in_words(schedule.weekly_cron(name, "03:15")) == f"every {name} at 03:15"
        assert schedule.day_of(schedule.weekly_cron(key, "03:15").split()[4]) == key
