"""Always passes. Fixture for Cascade's regrtest output parser."""
import unittest


class PassTests(unittest.TestCase):
    def test_addition(self):
        self.assertEqual(1 + 1, 2)

    def test_membership(self):
        self.assertIn("b", "abc")

    @unittest.skip("skipped on purpose")
    def test_skipped(self):
        self.fail("never runs")


if __name__ == "__main__":
    unittest.main()
