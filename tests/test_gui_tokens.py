"""The token strips: source tokens always, and for seq2seq the decoder inputs with the token each
row predicts."""

from tests.gui_fixtures import load, use_target


def test_seq2seq_shows_decoder_inputs_and_predictions(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("I like this course")
    use_target(window, "j'aime ce cours")
    cap = load(qtbot, window, tiny_model_dir("marian"))
    strip = window.dec_tokens
    assert window.dec_tokens.isVisible()
    n = len(cap.decoder_inputs)
    assert strip.columnCount() == n
    assert [strip.item(0, i).text() for i in range(n)] == list(cap.decoder_inputs.display)
    assert [strip.item(1, i).text() for i in range(n)] == [str(int(x)) for x in cap.decoder_inputs.ids]
    assert [strip.item(2, i).text() for i in range(n)] == list(cap.outputs.display)
    # the decoder input at t+1 is the output predicted at t (teacher forcing)
    assert list(cap.decoder_inputs.ids[1:]) == list(cap.outputs.ids[:-1])


def test_encoder_hides_the_decoder_strip_and_causal_toggle(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("I like this course")
    load(qtbot, window, tiny_model_dir("bert"))
    assert not window.dec_tokens.isVisible()
    assert window.tokens.columnCount() == len(window.capture.source)
    window.select(layer=1)
    assert not window.mask_check.isEnabled()  # an encoder has no causal mask to mark
