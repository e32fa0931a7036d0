from modules import scripts


class Hello(scripts.Script):
    def title(self):
        return "Hello"

    def show(self, is_img2img):
        return False
