//! Tokenizer and the Qwen2 chat template.
//!
//! Reads any Hugging Face `tokenizer.json` with the `tokenizers` crate, and trains a byte-level
//! BPE on a repository's own text for the CPU demo and tests (written as a standard
//! `tokenizer.json`). The chat template is Qwen2's:
//!
//! ```text
//! <|im_start|>system\n…<|im_end|>\n<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n…<|im_end|>\n
//! ```
//!
//! [`ChatTokenizer::render`] returns the token ids and, per token, whether it is a training
//! target (the content and `<|im_end|>` of the assistant turns chosen).

use std::path::Path;

use regrpo_schemas::Message;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::{Error, IoContext, Result};

pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// A tokenizer with the chat template's special ids.
#[derive(Clone)]
pub struct ChatTokenizer {
    inner: Tokenizer,
    pub im_start: u32,
    pub im_end: u32,
    pub pad: u32,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl ChatTokenizer {
    fn wrap(inner: Tokenizer) -> Result<Self> {
        let id =
            |t: &str| inner.token_to_id(t).ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {t} token")));
        Ok(ChatTokenizer { im_start: id(IM_START)?, im_end: id(IM_END)?, pad: id(END_OF_TEXT)?, inner })
    }

    /// Reads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Self::wrap(Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?)
    }

    /// Trains a byte-level BPE of `vocab` tokens (special tokens included) on `texts`.
    pub fn train(texts: impl Iterator<Item = String> + Send, vocab: usize) -> Result<Self> {
        let specials: Vec<AddedToken> =
            [END_OF_TEXT, IM_START, IM_END].iter().map(|t| AddedToken::from(*t, true)).collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_post_processor(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::new(false, true, true)))
            .build()
            .map_err(tok_err)?;
        tk.train(&mut trainer, texts).map_err(tok_err)?;
        let mut tokenizer: Tokenizer = tk.into();
        tokenizer.add_special_tokens(&specials);
        Self::wrap(tokenizer)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, true).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        // transformers reads the chat template and special tokens from tokenizer_config.json.
        let cfg = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": null,
            "eos_token": IM_END,
            "pad_token": END_OF_TEXT,
            "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        });
        let cfg_path = path.with_file_name("tokenizer_config.json");
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap_or_default()).at(&cfg_path)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// The header of a turn: `<|im_start|>role\n`.
    pub fn header(&self, role: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode(&format!("{role}\n"))?);
        Ok(ids)
    }

    /// Token ids of the chat and, per token, whether it is a target. `target(i, message)`
    /// chooses the trained turns; only assistant turns can be targets.
    pub fn render(
        &self,
        messages: &[Message],
        target: impl Fn(usize, &Message) -> bool,
    ) -> Result<(Vec<u32>, Vec<bool>)> {
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        let newline = self.encode("\n")?;
        for (i, m) in messages.iter().enumerate() {
            let header = self.header(&m.role)?;
            mask.extend(std::iter::repeat_n(false, header.len()));
            ids.extend(header);
            let on = m.role == "assistant" && target(i, m);
            let content = self.encode(&m.content)?;
            mask.extend(std::iter::repeat_n(on, content.len() + 1));
            ids.extend(content);
            ids.push(self.im_end);
            mask.extend(std::iter::repeat_n(false, newline.len()));
            ids.extend(newline.iter().copied());
        }
        Ok((ids, mask))
    }

    /// The prompt for the next assistant turn: the chat, then `<|im_start|>assistant\n`.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let (mut ids, _) = self.render(messages, |_, _| false)?;
        ids.extend(self.header("assistant")?);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    #[test]
    fn trained_bpe_round_trips_and_masks_assistant_turns() {
        let texts = (0..50).map(|i| {
            format!("Thought: read file number {i}.\nCode:\n```py\ninspect_file_as_text(file_path=\"f{i}.txt\")\n```")
        });
        let tk = ChatTokenizer::train(texts, 300).unwrap();
        assert!(tk.vocab_size() <= 300 && tk.vocab_size() > 259);
        let text = "inspect_file_as_text(file_path=\"ü.txt\")";
        assert_eq!(tk.decode(&tk.encode(text).unwrap()).unwrap(), text);
        let chat = [
            msg("system", "sys"),
            msg("user", "Task: x"),
            msg("assistant", "Thought: a"),
            msg("user", "obs"),
            msg("assistant", "final"),
        ];
        let (ids, mask) = tk.render(&chat, |i, _| i == 4).unwrap();
        assert_eq!(ids.len(), mask.len());
        let target: Vec<u32> = ids.iter().zip(&mask).filter(|(_, m)| **m).map(|(i, _)| *i).collect();
        let mut want = tk.encode("final").unwrap();
        want.push(tk.im_end);
        assert_eq!(target, want);
        let dir = tempfile::tempdir().unwrap();
        tk.save(&dir.path().join("tokenizer.json")).unwrap();
        let back = ChatTokenizer::load(&dir.path().join("tokenizer.json")).unwrap();
        // Training is deterministic: the same text gives the same tokenizer.
        let texts = (0..50).map(|i| {
            format!("Thought: read file number {i}.\nCode:\n```py\ninspect_file_as_text(file_path=\"f{i}.txt\")\n```")
        });
        let again = ChatTokenizer::train(texts, 300).unwrap();
        again.save(&dir.path().join("again.json")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tokenizer.json")).unwrap(),
            std::fs::read(dir.path().join("again.json")).unwrap()
        );
        assert_eq!(back.encode(text).unwrap(), tk.encode(text).unwrap());
        assert_eq!(back.im_end, tk.im_end);
    }
}
