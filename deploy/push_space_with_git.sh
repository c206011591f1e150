#!/usr/bin/env bash
# Deploy this app to a Hugging Face Space with git instead of `python -m lstm_model.publish space`.
#
#   bash deploy/push_space_with_git.sh USER/NAME [GIT_URL]
#
# The Space gets one fresh commit holding exactly the files `python -m lstm_model.publish space
# USER/NAME --list` names, its README.md with the Space's configuration (deploy/space.yaml) as front
# matter (`--readme`), and deploy/space.gitattributes as its .gitattributes, so that the model
# weights and images are stored with Git LFS (the Hub refuses them otherwise: over 10 MB, or
# binary). This repository's own history is never pushed (it holds the weights as plain blobs) and
# is not changed: the commit is made in a temporary repository. --force replaces what the Space
# holds, including the first commit the Hub makes in a new Space. Create the Space first
# (`hf repos create USER/NAME --repo-type space --space-sdk gradio`) and log in (`hf auth login`;
# git asks for your user name and a write token, or use a credential helper).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash deploy/push_space_with_git.sh USER/NAME [GIT_URL]" >&2
  exit 2
fi
space=$1
url=${2:-https://huggingface.co/spaces/$space}
if ! command -v git-lfs >/dev/null 2>&1; then
  echo "error: git-lfs is needed to push the model weights: install it (apt install git-lfs, brew install git-lfs)." >&2
  exit 1
fi
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
files=$(cd "$root" && "$python" -m lstm_model.publish space "$space" --list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git init -q -b main "$work"
(cd "$root" && printf '%s\n' $files | while read -r f; do mkdir -p "$work/$(dirname "$f")"; cp "$f" "$work/$f"; done)
# The Space reads its configuration from README.md's front matter, which the repository's README lacks.
(cd "$root" && "$python" -m lstm_model.publish space "$space" --readme) > "$work/README.md"
cp "$root/deploy/space.gitattributes" "$work/.gitattributes"
cd "$work"
# The LFS filter for this repository only (whatever the user's global git configuration says).
lfs=(-c filter.lfs.clean="git-lfs clean -- %f" -c filter.lfs.smudge="git-lfs smudge -- %f"
     -c filter.lfs.process="git-lfs filter-process" -c filter.lfs.required=true)
git "${lfs[@]}" add -A
git "${lfs[@]}" -c user.name="${GIT_AUTHOR_NAME:-LSTM Memory Chat}" -c user.email="${GIT_AUTHOR_EMAIL:-deploy@localhost}" \
  commit -q -m "Deploy LSTM Memory Chat"
git lfs push --all "$url" main
git push --force --no-verify "$url" main:main
echo "Pushed $(printf '%s\n' $files | wc -l) files to $url; the Space builds and starts in a few minutes."
