//! Image operators on PNG files of the task: `image_info`, `crop`, `draw_box`, `add_text`.
//!
//! Images are small RGB PNGs. `crop` reports the colors of a region (named from a fixed
//! palette), `draw_box` and `add_text` draw and report the sha256 of the image they produce
//! (the task folder stays read-only). Boxes outside the image and unreadable files are real
//! errors.

use std::io::Cursor;
use std::sync::Arc;

use async_trait::async_trait;
use image::{ImageFormat, Rgb, RgbImage};
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec, file_not_found, sandbox_path};

/// The named colors images are drawn with and regions are described in.
pub const PALETTE: &[(&str, [u8; 3])] = &[
    ("white", [255, 255, 255]),
    ("black", [0, 0, 0]),
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [240, 210, 30]),
    ("orange", [245, 140, 20]),
    ("purple", [140, 60, 180]),
    ("gray", [128, 128, 128]),
];

pub fn color(name: &str) -> Option<[u8; 3]> {
    PALETTE.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

fn nearest(px: &Rgb<u8>) -> &'static str {
    PALETTE
        .iter()
        .min_by_key(|(_, c)| (0..3).map(|i| (i32::from(c[i]) - i32::from(px[i])).pow(2)).sum::<i32>())
        .map(|(n, _)| *n)
        .unwrap_or("white")
}

fn box_schema() -> Value {
    json!({"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4, "description": "[x1, y1, x2, y2] in pixels, x2 > x1, y2 > y1."})
}

fn palette_schema() -> Value {
    json!({"type": "string", "enum": PALETTE.iter().map(|(n, _)| *n).collect::<Vec<_>>()})
}

fn spec(name: &str, description: &str, properties: Value, required: &[&str], feasible: Vec<ErrorType>) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: json!({"type": "object", "properties": properties, "required": required}),
        category: "image".into(),
        feasible,
    }
}

fn load(ctx: &CallContext, given: &str) -> Result<RgbImage, ToolOutput> {
    let path = sandbox_path(ctx, given)?;
    if !path.exists() {
        return Err(file_not_found(ctx, "image", given));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| ToolOutput::error("io_error", format!("Error: cannot read {given}: {e}")))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| ToolOutput::error("bad_image", format!("Error: cannot decode {given}: {e}")))?;
    Ok(img.to_rgb8())
}

/// The `N` integers of a list argument. JSON Schema's `integer` admits `10.0` and integers
/// beyond `i64`, and a schema may not fix the length: each is read or refused here with an
/// error observation, never a panic.
fn ints<const N: usize>(v: Option<&Value>, name: &str) -> Result<[i64; N], ToolOutput> {
    let bad = || {
        let got = v.map_or_else(|| "nothing".to_string(), Value::to_string);
        ToolOutput::error("invalid_argument", format!("Error: `{name}` must be a list of {N} integers, got {got}"))
    };
    let list = v.and_then(Value::as_array).filter(|a| a.len() == N).ok_or_else(bad)?;
    let mut out = [0i64; N];
    for (o, x) in out.iter_mut().zip(list) {
        *o = match (x.as_i64(), x.as_f64()) {
            (Some(i), _) => i,
            // Integral floats within the range f64 holds exactly.
            (None, Some(f)) if f.fract() == 0.0 && f.abs() <= 9.0e15 => f as i64,
            _ => return Err(bad()),
        };
    }
    Ok(out)
}

/// Checks a box against the image; returns it as `u32`s.
fn check_box(b: [i64; 4], img: &RgbImage, given: &str) -> Result<[u32; 4], ToolOutput> {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let [x1, y1, x2, y2] = b;
    if x2 <= x1 || y2 <= y1 {
        return Err(ToolOutput::error(
            "empty_box",
            format!("Error: box {b:?} is empty: x2 must exceed x1 and y2 must exceed y1"),
        ));
    }
    if x1 < 0 || y1 < 0 || x2 > w || y2 > h {
        return Err(ToolOutput::error(
            "out_of_bounds",
            format!("Error: box {b:?} is outside the {w}x{h} image {given}"),
        ));
    }
    Ok([x1 as u32, y1 as u32, x2 as u32, y2 as u32])
}

/// The named colors of a region, largest share first: `red 64%, white 36%`.
pub fn describe_colors(img: &RgbImage, [x1, y1, x2, y2]: [u32; 4]) -> String {
    let mut counts: Vec<(&str, u32)> = PALETTE.iter().map(|(n, _)| (*n, 0)).collect();
    for y in y1..y2 {
        for x in x1..x2 {
            let n = nearest(img.get_pixel(x, y));
            if let Some(c) = counts.iter_mut().find(|(name, _)| *name == n) {
                c.1 += 1;
            }
        }
    }
    let total = ((x2 - x1) * (y2 - y1)).max(1);
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .filter(|(_, c)| *c * 100 >= total)
        .map(|(n, c)| format!("{n} {}%", (c * 100 + total / 2) / total))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The box `[x1, y1, x2, y2]` (image coordinates) around the non-white pixels of a region.
pub fn content_box(img: &RgbImage, [x1, y1, x2, y2]: [u32; 4]) -> Option<[u32; 4]> {
    let mut b: Option<[u32; 4]> = None;
    for y in y1..y2 {
        for x in x1..x2 {
            if nearest(img.get_pixel(x, y)) != "white" {
                b = Some(match b {
                    None => [x, y, x + 1, y + 1],
                    Some([a, c, d, e]) => [a.min(x), c.min(y), d.max(x + 1), e.max(y + 1)],
                });
            }
        }
    }
    b
}

fn digest(img: &RgbImage) -> String {
    let mut bytes = Vec::new();
    let _ = img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png);
    hex::encode(&Sha256::digest(&bytes)[..6])
}

pub struct ImageInfo {
    spec: ToolSpec,
}

#[async_trait]
impl Tool for ImageInfo {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn version(&self) -> String {
        "builtin-image_info/1".into()
    }
    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let given = args.get("image_path").and_then(Value::as_str).unwrap_or_default();
        match load(ctx, given) {
            Ok(img) => ToolOutput::ok(format!("{given}: PNG image, {}x{} pixels, RGB", img.width(), img.height())),
            Err(e) => e,
        }
    }
}

pub struct Crop {
    spec: ToolSpec,
}

#[async_trait]
impl Tool for Crop {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn version(&self) -> String {
        "builtin-crop/1".into()
    }
    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let given = args.get("image_path").and_then(Value::as_str).unwrap_or_default();
        let img = match load(ctx, given) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let b = match ints::<4>(args.get("box"), "box") {
            Ok(b) => b,
            Err(e) => return e,
        };
        match check_box(b, &img, given) {
            Ok(r) => {
                let shape = match content_box(&img, r) {
                    Some(c) => format!("; shape at {c:?}"),
                    None => String::new(),
                };
                ToolOutput::ok(format!(
                    "cropped {b:?} of {given}: {}x{} pixels; colors: {}{shape}",
                    r[2] - r[0],
                    r[3] - r[1],
                    describe_colors(&img, r)
                ))
            }
            Err(e) => e,
        }
    }
}

pub struct DrawBox {
    spec: ToolSpec,
}

#[async_trait]
impl Tool for DrawBox {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn version(&self) -> String {
        "builtin-draw_box/1".into()
    }
    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let given = args.get("image_path").and_then(Value::as_str).unwrap_or_default();
        let mut img = match load(ctx, given) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let b = match ints::<4>(args.get("box"), "box") {
            Ok(b) => b,
            Err(e) => return e,
        };
        let [x1, y1, x2, y2] = match check_box(b, &img, given) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let name = args.get("color").and_then(Value::as_str).unwrap_or("red");
        let c = Rgb(color(name).unwrap_or([220, 40, 40]));
        for x in x1..x2 {
            img.put_pixel(x, y1, c);
            img.put_pixel(x, y2 - 1, c);
        }
        for y in y1..y2 {
            img.put_pixel(x1, y, c);
            img.put_pixel(x2 - 1, y, c);
        }
        ToolOutput::ok(format!(
            "drew a {name} box {b:?} on {given}: {}x{} PNG, sha256 {}",
            img.width(),
            img.height(),
            digest(&img)
        ))
    }
}

/// A 3x5 pixel font: each glyph is 5 rows of 3 bits.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c.to_ascii_uppercase() {
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [6, 1, 2, 4, 7],
        '3' => [6, 1, 2, 1, 6],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 6, 1, 6],
        '6' => [3, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 6],
        ' ' => [0, 0, 0, 0, 0],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ':' => [0, 2, 0, 2, 0],
        _ => return None,
    })
}

pub struct AddText {
    spec: ToolSpec,
}

#[async_trait]
impl Tool for AddText {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn version(&self) -> String {
        "builtin-add_text/font3x5-1".into()
    }
    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let given = args.get("image_path").and_then(Value::as_str).unwrap_or_default();
        let mut img = match load(ctx, given) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
        let pos = match ints::<2>(args.get("position"), "position") {
            Ok(p) => p,
            Err(e) => return e,
        };
        let [x0, y0] = pos;
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        let need = text.chars().count() as i64 * 4 - 1;
        if x0 < 0 || y0 < 0 || x0 >= w || y0 >= h {
            return ToolOutput::error(
                "out_of_bounds",
                format!("Error: position {pos:?} is outside the {w}x{h} image {given}"),
            );
        }
        if x0 + need > w || y0 + 5 > h {
            return ToolOutput::error(
                "out_of_bounds",
                format!(
                    "Error: text '{text}' at {pos:?} runs past the edge of the {w}x{h} image {given} (needs {need}x5 pixels)"
                ),
            );
        }
        let name = args.get("color").and_then(Value::as_str).unwrap_or("black");
        let c = Rgb(color(name).unwrap_or([0, 0, 0]));
        for (i, ch) in text.chars().enumerate() {
            let Some(rows) = glyph(ch) else {
                return ToolOutput::error(
                    "unsupported_character",
                    format!("Error: add_text cannot draw the character '{ch}' (letters, digits, space, - . : only)"),
                );
            };
            for (dy, bits) in rows.iter().enumerate() {
                for dx in 0..3 {
                    if bits & (4 >> dx) != 0 {
                        img.put_pixel((x0 + i as i64 * 4 + dx) as u32, (y0 + dy as i64) as u32, c);
                    }
                }
            }
        }
        ToolOutput::ok(format!("wrote '{text}' in {name} at {pos:?} on {given}: {w}x{h} PNG, sha256 {}", digest(&img)))
    }
}

pub fn tools() -> Vec<Arc<dyn Tool>> {
    let path = json!({"type": "string", "minLength": 1, "description": "The PNG file, relative to the task folder."});
    let point = json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2, "description": "[x, y] of the top-left corner."});
    vec![
        Arc::new(ImageInfo {
            spec: spec(
                "image_info",
                "Size and format of an image.",
                json!({"image_path": path}),
                &["image_path"],
                vec![ErrorType::ArgInvalid, ErrorType::ToolMismatch],
            ),
        }),
        Arc::new(Crop {
            spec: spec(
                "crop",
                "Crop a region of an image and describe its colors.",
                json!({"image_path": path, "box": box_schema()}),
                &["image_path", "box"],
                vec![ErrorType::GroundingDrift, ErrorType::ArgInvalid, ErrorType::ToolMismatch],
            ),
        }),
        Arc::new(DrawBox {
            spec: spec(
                "draw_box",
                "Draw a rectangle on an image.",
                json!({"image_path": path, "box": box_schema(), "color": palette_schema()}),
                &["image_path", "box"],
                vec![ErrorType::GroundingDrift, ErrorType::ArgInvalid],
            ),
        }),
        Arc::new(AddText {
            spec: spec(
                "add_text",
                "Write a short label (letters, digits, space, - . :) on an image.",
                json!({"image_path": path, "text": {"type": "string", "minLength": 1, "maxLength": 40}, "position": point, "color": palette_schema()}),
                &["image_path", "text", "position"],
                vec![ErrorType::GroundingDrift, ErrorType::ArgInvalid],
            ),
        }),
    ]
}
