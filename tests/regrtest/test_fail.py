"""One passing and one failing method. Fixture for Cascade's regrtest parser."""
import unittest


class FailTests(unittest.TestCase):
    def test_ok(self):
        self.assertTrue(True)

    def test_wrong_sum(self):
        self.assertEqual(sum([1, 2, 3]), 7)


if __name__ == "__main__":
    unittest.main()
