"""Why the guard exists: a second raw Daily.init() aborts the whole process."""

import daily

daily.Daily.init()
daily.Daily.init()
print("survived")
