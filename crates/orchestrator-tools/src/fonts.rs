//! The font embedded in the binary (DejaVu Sans, under its licence in
//! `assets/fonts/`), so charts and PDFs need none of the machine's fonts.

pub(crate) const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
