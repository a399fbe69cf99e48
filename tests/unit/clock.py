"""A clock the test moves by hand (``clock.now += seconds``)."""


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now
