import time
from streamlit.testing.v1 import AppTest
def test_smoke(seeded):
    at = AppTest.from_file("/work/main/apps/app.py", default_timeout=60).run()
    assert not at.exception, at.exception
    at.text_input(key="api_key_input").input(seeded.alpha.key)
    at.button[0].click().run()
    assert not at.exception, at.exception
    print([m.label for m in at.metric], [m.value for m in at.metric])
    print(at.title)
