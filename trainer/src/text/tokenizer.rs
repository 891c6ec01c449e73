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
//! Chats are laid out into token windows by [`crate::text::window`].

use std::path::Path;

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
            return Err(Error::Io(regrpo_schemas::IoError {
                path: path.into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }));
        }
        let named = |e: &dyn std::fmt::Display| Error::Tokenizer(format!("{}: {e}", path.display()));
        // tokenizers 0.22 panics (`expect("Helper")` in its decoder's deserializer) on a
        // `decoder` section it cannot parse, e.g. a file cut short there: a clear error instead.
        let inner = std::panic::catch_unwind(|| Tokenizer::from_file(path))
            .map_err(|_| named(&"not a readable tokenizer.json (its `decoder` section does not parse)"))?
            .map_err(|e| named(&e))?;
        Self::wrap(inner).map_err(|e| match e {
            Error::Tokenizer(reason) => named(&reason),
            other => other,
        })
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
        Ok(std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap_or_default()).at(&cfg_path)?)
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

    /// The bytes each token stands for (`None` for special tokens such as `<|im_end|>`), for
    /// constrained decoding. Byte-level BPE tokens are mapped back through GPT-2's byte
    /// alphabet; other tokens are decoded one by one.
    pub fn token_bytes(&self) -> Vec<Option<Vec<u8>>> {
        let table = byte_level_alphabet();
        let special: std::collections::HashSet<u32> = self.inner.get_added_tokens_decoder().keys().copied().collect();
        (0..self.vocab_size() as u32)
            .map(|id| {
                if special.contains(&id) {
                    return None;
                }
                let token = self.inner.id_to_token(id)?;
                token
                    .chars()
                    .map(|c| table.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .or_else(|| self.decode(&[id]).ok().map(String::into_bytes))
            })
            .collect()
    }

    /// The header of a turn: `<|im_start|>role\n`.
    pub fn header(&self, role: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode(&format!("{role}\n"))?);
        Ok(ids)
    }
}

/// GPT-2's map from the characters of byte-level tokens back to bytes.
fn byte_level_alphabet() -> std::collections::HashMap<char, u8> {
    let mut bytes: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    bytes.into_iter().zip(chars).filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_round_trips_and_spells_its_bytes() {
        let texts = (0..50).map(|i| {
            format!("Thought: read file number {i}.\nCode:\n```py\ninspect_file_as_text(file_path=\"f{i}.txt\")\n```")
        });
        let tk = ChatTokenizer::train(texts, 300).unwrap();
        assert!(tk.vocab_size() <= 300 && tk.vocab_size() > 259);
        let text = "inspect_file_as_text(file_path=\"ü.txt\")";
        assert_eq!(tk.decode(&tk.encode(text).unwrap()).unwrap(), text);
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
        // Token bytes spell what decoding gives, specials have none.
        let bytes = tk.token_bytes();
        assert!(bytes[tk.im_end as usize].is_none() && bytes[tk.pad as usize].is_none());
        let ids = tk.encode(text).unwrap();
        let spelled: Vec<u8> = ids.iter().flat_map(|i| bytes[*i as usize].clone().unwrap()).collect();
        assert_eq!(spelled, text.as_bytes());
        assert!((0..=255u8).all(|b| bytes.iter().any(|t| t.as_deref() == Some(&[b][..]))), "every byte is a token");
    }
}
