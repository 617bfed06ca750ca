"""One date-time format across the console, always with its time zone.

Django's own English formats ("Nov. 27, 2026, 10:53 a.m.") omit the zone and
differ between lists and pages; an approver comparing an event with a chart
needs the same unambiguous stamp everywhere.
"""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
